CREATE OR REPLACE MACRO re_url() AS
    '\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://(?:[^\s<>"''`]|<SECRET>)*(?:[^\s<>"''`.,;:!?)\]}]|<SECRET>)'
    || '|\bwww\.[a-zA-Z0-9-]+\.(?:[^\s<>"''`]|<SECRET>)*(?:[^\s<>"''`.,;:!?)\]}]|<SECRET>)';
