CREATE OR REPLACE VIEW quality AS
WITH flags AS (
    SELECT conversation_id, messages, replies, chars, repetition, text_ratio, feedback, unanswered_tool_calls,
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
           coalesce(text_ratio < getvariable('quality_min_text_ratio'), false) AS noise,
           unanswered_tool_calls > 0 AS unanswered_tool_call
    FROM conversation_features
)
SELECT *,
       list_filter(quality_reasons(),
                   lambda reason, i: [too_few_turns, too_many_turns, too_short, too_long, no_reply, empty_reply,
                                      repetitive, refusal, error_reply, negative_feedback, noise,
                                      unanswered_tool_call][i]) AS reasons,
       NOT (too_few_turns OR too_many_turns OR too_short OR too_long OR no_reply OR empty_reply OR repetitive
            OR refusal OR error_reply OR negative_feedback OR noise OR unanswered_tool_call) AS passed
FROM flags;
