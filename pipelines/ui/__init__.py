"""The dashboard (``chatlake ui``): a Streamlit app over a home, in the optional ``ui`` extra.

``data`` is what the pages show and do, as plain functions over the library (testable without a browser);
``app`` is the Streamlit script that lays them out; ``server`` checks the address and the token and starts
Streamlit on it. Only ``server`` is imported by the CLI, and it imports nothing of Streamlit, so a missing
extra is reported before anything starts.
"""
