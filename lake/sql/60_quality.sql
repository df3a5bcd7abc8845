-- quality: one row per conversation with a flag for each reason to leave it out of training, the list of
-- reasons that hold and `passed` (no reason). Thresholds come from the `quality` section of the config file
-- (lake/views.py sets them as DuckDB variables on every connection).
--   too_few_turns / too_many_turns   messages outside [min_turns, max_turns]
--   too_short / too_long             total cleaned characters outside [min_conversation_chars, max_conversation_chars]
--   no_reply                         no assistant message at all
--   empty_reply                      an assistant message shorter than min_assistant_chars (shortest_reply)
--   repetitive                       a reply whose word 3-shingles repeat more than max_repetition_ratio
--   refusal / error_reply            a reply that opens with a refusal / is an error message (re_refusal(), re_error_reply())
--   negative_feedback                the conversation's feedback is negative (conversations.feedback)
--   noise                            a message (20+ characters) whose letters and spaces are under min_text_ratio
--                                    (counted in messages with a run of symbols or digits, see re_noise_hint())
CREATE OR REPLACE MACRO quality_reasons() AS
    ['too_few_turns', 'too_many_turns', 'too_short', 'too_long', 'no_reply', 'empty_reply', 'repetitive',
     'refusal', 'error_reply', 'negative_feedback', 'noise'];

CREATE OR REPLACE VIEW quality AS
WITH flags AS (
    SELECT conversation_id, messages, replies, chars, repetition, text_ratio, feedback,
           messages < getvariable('quality_min_turns') AS too_few_turns,
           messages > getvariable('quality_max_turns') AS too_many_turns,
           chars < getvariable('quality_min_conversation_chars') AS too_short,
           chars > getvariable('quality_max_conversation_chars') AS too_long,
           replies = 0 AS no_reply,
           coalesce(shortest_reply < getvariable('quality_min_assistant_chars'), false) AS empty_reply,
           repetition > getvariable('quality_max_repetition_ratio') AS repetitive,
           refusal,
           error_reply,
           feedback = 'negative' AS negative_feedback,
           coalesce(text_ratio < getvariable('quality_min_text_ratio'), false) AS noise
    FROM conversation_features
)
SELECT *,
       list_filter(quality_reasons(),
                   lambda reason, i: [too_few_turns, too_many_turns, too_short, too_long, no_reply, empty_reply,
                                      repetitive, refusal, error_reply, negative_feedback, noise][i]) AS reasons,
       NOT (too_few_turns OR too_many_turns OR too_short OR too_long OR no_reply OR empty_reply OR repetitive
            OR refusal OR error_reply OR negative_feedback OR noise) AS passed
FROM flags;
