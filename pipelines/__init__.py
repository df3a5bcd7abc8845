"""The steps of the loop above the lake and the registry, one subpackage each: ``snapshot`` (training sets cut
from the lake), ``train`` (training and evaluation), ``watch`` (the watcher that runs the loop by itself) and
``proxy`` (capture in front of Ollama); ``forget`` composes an erasure across all of them."""
