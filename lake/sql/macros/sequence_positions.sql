-- sequence_positions(sequence): the positions (1-based, in turn order) that a snapshot needs of a sequence:
--   last_reply       of its last assistant message; NULL: none
--   reply_positions  of the assistant messages that directly follow a user message (the single-turn formats'
--                    examples)
CREATE OR REPLACE MACRO sequence_positions(sequence) AS {
    'last_reply': (len(sequence) + 1 - list_position(list_reverse(list_transform(sequence, lambda m: m.role)), 'assistant'))::INTEGER,
    'reply_positions': list_filter(range(2, len(sequence) + 1),
                                   lambda i: sequence[i].role = 'assistant' AND sequence[i - 1].role = 'user')::INTEGER[]
};
