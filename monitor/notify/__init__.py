"""The notifier: alerts from the Redis stream to chat and email, once per channel, with a chart.

Pure parts (`routing`, `render`, `silences` matching) take the time as an argument; the async
parts (`inbox`, `dispatch`, `delivery`, `service`) drive them. See docs/notify.md.
"""
