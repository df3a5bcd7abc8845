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
--   noise                            a message (20+ characters; not a tool's result) whose letters and spaces are
--                                    under min_text_ratio (counted in messages with a run of symbols or digits,
--                                    see re_noise_hint())
--   unanswered_tool_call             a tool call left without a result (conversation_features.unanswered_tool_calls):
--                                    a model would learn to call and go on without the answer
-- A reply that only calls tools is no empty reply (it is a step toward the answer): empty_reply reads the
-- replies that call no tool.
CREATE OR REPLACE MACRO quality_reasons() AS
    ['too_few_turns', 'too_many_turns', 'too_short', 'too_long', 'no_reply', 'empty_reply', 'repetitive',
     'refusal', 'error_reply', 'negative_feedback', 'noise', 'unanswered_tool_call'];
