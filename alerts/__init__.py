"""Findings become pages: `rules` say what pages, `engine` rolls findings up into alerts, the
sinks (`alertmanager`, `webhook`, `slack`, `pagerduty`, the log in `delivery`) deliver them,
`watchdog` watches paywatch itself, and `cli`/`runner` run it all on Kafka or in-process."""
