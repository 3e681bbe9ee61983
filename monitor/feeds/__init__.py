"""Inbound adapters: a transport in, batches of ticks, bars and rejections out."""
