"""Which adapter asks which channel: one per declared queryable channel, built from its settings.

Its own module, above `channels.py` (the protocol every adapter implements) and the adapters,
so neither needs to import the other lazily.
"""

from __future__ import annotations

from paywatch.compensation.alipay import AlipayAdapter
from paywatch.compensation.channels import ChannelAdapter
from paywatch.compensation.generic import GenericAdapter
from paywatch.compensation.settings import CompensationSettings
from paywatch.compensation.stripe import StripeAdapter
from paywatch.compensation.wechatpay import WechatPayAdapter


def build_adapters(settings: CompensationSettings) -> dict[str, ChannelAdapter]:
    """One adapter per declared queryable channel, credentials read now (fail fast, by name)."""
    kinds = {"wechatpay": WechatPayAdapter, "alipay": AlipayAdapter, "stripe": StripeAdapter}
    adapters: dict[str, ChannelAdapter] = {}
    for name, ch in settings.channels.items():
        if ch.adapter == "none":
            continue
        timeout = settings.budget_for(name).timeout_s
        if ch.adapter == "generic":
            adapters[name] = GenericAdapter.from_settings(ch.base_url, timeout, ch.generic)
        else:
            adapters[name] = kinds[ch.adapter].from_settings(ch.base_url, timeout, getattr(ch, ch.adapter))
    return adapters
