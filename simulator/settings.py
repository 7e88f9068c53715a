"""Configuration of the traffic simulator (`paywatch simulate`, the demo's traffic)."""

from __future__ import annotations

from pydantic import Field

from paywatch.settings import Section


class SimulatorSettings(Section):
    """The simulated payment business behind `paywatch simulate` and `paywatch demo`: its volume,
    services and customers. Channels, merchants and incidents are chosen on the command line."""

    peak_orders_per_s: float = Field(
        25.0,
        gt=0,
        description="New business orders per second at the daily peak, all channels together "
        "(about 1.05 attempts per order). Volume follows a diurnal curve below it.",
    )
    utc_offset_h: float = Field(
        8.0,
        description="Local time of the simulated customers relative to UTC; the diurnal curve "
        "(quiet night, lunch and dinner peaks) is drawn in local time.",
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Heartbeat interval of every simulated service instance."
    )
    instances: dict[str, int] = Field(
        default_factory=lambda: {
            "order-service": 3,
            "payment-gateway": 3,
            "callback-receiver": 2,
            "compensation-job": 2,
        },
        description="Simulated services and how many instances of each send heartbeats.",
    )
    deploys_per_service_per_day: float = Field(
        4.0,
        ge=0,
        description="Rolling restarts (a `stopping` beat, then a new instance) per service per day: "
        "planned stops that must never page.",
    )
    repay_probability: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Chance that a customer who paid but still sees 'unpaid' after their patience "
        "runs out pays again: the mechanism behind duplicate charges.",
    )
    query_after_s: list[float] = Field(
        default_factory=lambda: [90.0, 300.0, 900.0, 1800.0],
        description="Ages of an attempt without a final status at which the simulated business's own "
        "compensation job queries the channel.",
    )
    order_timeout_s: float = Field(
        900.0, gt=0, description="The business closes an order still unpaid after this long."
    )
