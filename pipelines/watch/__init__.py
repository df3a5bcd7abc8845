"""``chatlake watch``: the ``watcher`` supervises; ``policy`` decides when to retrain (a pure function of what
``observe`` saw); ``run`` is one run of the loop in a child process; ``inbox`` imports dropped files; ``state``
and ``status`` keep and show the watcher's memory."""
