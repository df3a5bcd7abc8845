-- feedback_verdict: a conversation's feedback in one word, from its thumbs (on its messages and on the
-- whole conversation, added up) and the mean score given to the whole conversation: 'negative' when any
-- thumb is down, else 'positive' when a thumb is up or the mean score is at least 0.5, else 'negative' when
-- there is a lower score, else 'none'. The conversations and conversation_features views both apply it.
CREATE OR REPLACE MACRO feedback_verdict(thumbs_up, thumbs_down, mean_score) AS
    CASE WHEN thumbs_down > 0 THEN 'negative'
         WHEN thumbs_up > 0 OR mean_score >= 0.5 THEN 'positive'
         WHEN mean_score < 0.5 THEN 'negative'
         ELSE 'none' END;
