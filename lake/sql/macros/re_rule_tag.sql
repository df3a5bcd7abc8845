-- The tag redact_secrets() leaves before a placeholder: the rule's name between two private-use characters.
CREATE OR REPLACE MACRO re_rule_tag() AS '\x{E000}(\w+)\x{E001}';
