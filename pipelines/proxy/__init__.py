"""``chatlake proxy``: the ``server`` forwards to Ollama; ``protocol`` reads the chat endpoints' requests and
replies; ``threads`` finds the conversation a request continues; ``writer`` logs exchanges to the lake from a
process of its own, with ``retry_spool`` holding what the lake could not take yet."""
