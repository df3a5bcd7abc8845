-- conversation_exception_messages: their clean_messages. When materialize() (lake/views.py) finds no
-- exceptions it shadows this view with an empty one, so the messages view is not evaluated for nothing.
CREATE OR REPLACE VIEW conversation_exception_messages AS
SELECT * FROM clean_messages SEMI JOIN conversation_exceptions USING (conversation_id);
