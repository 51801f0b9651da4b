"""Routing: who gets an event. ``recipients`` is the one answer for live delivery, replay and samples;
``matching`` and ``conditions`` read subscriptions, ``candidates`` indexes them, ``directory`` holds this
process's current copy of every integration's config."""
