CREATE OR REPLACE MACRO re_error_reply() AS
    '^\s*(?i:(?:error|exception)\b|traceback \(most recent call last\)|an? (?:unexpected |internal )?error (?:has )?occurred'
    || '|internal server error|(?:rate limit|quota) (?:exceeded|reached)|request (?:failed|timed out)'
    || '|service unavailable|something went wrong)';
