CREATE OR REPLACE MACRO re_ip_hint() AS '\d\.\d|[0-9a-fA-F]:[0-9a-fA-F]*:';
