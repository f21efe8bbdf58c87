"""Built-in synthetic e-commerce traffic with labelled fraud and scripted drift.

The generator builds a small *world* (users with home countries, devices, IPs, cards and usual
payment methods; merchants with a category and a catalog of products with base prices) and then
simulates traffic in it:

* legitimate traffic is vectorised with numpy: daily and weekly seasonality in the user's local
  time, Zipf-like returning users, product choice near each user's usual price level, lognormal
  prices per product, ~3% refunds, and legitimate look-alikes of the fraud patterns (travellers
  and gifts with a country mismatch, households sharing a device, carrier NAT IPs shared by many
  users, bursts of small digital orders, brand-new accounts, users on a new phone, VPN users);
* fraud is injected episode by episode, one function per typology in `riskops.schema.FRAUD_TYPES`,
  each labelled with its `fraud_type`. Fraudsters prefer resellable items ("gift card", "iPhone",
  "GPU", "PlayStation", "limited edition", "prepaid", "license key" ...) *within* categories, so part
  of the signal lives in the product text; legitimate users buy those items too.

Drift scenarios (`SCENARIOS`) change the traffic of a segment: a new fraud ring, a promotion season,
a price shift, a new payment method. `generate_with_drift` appends such a segment after normal traffic
in the same world and records the onset in `df.attrs["drift_onset"]`.

Amounts are in the order currency (the user's local currency); `FX_PER_USD` converts them back.

Layout: the data (`tables`: countries, currencies, IPs, payment methods, hours, merchants, names,
the fraud mix; `product_templates`: the product vocabulary) apart from the logic (`world`: users,
merchants, catalogues; `segment`: a stretch of traffic under one scenario; `legit` and `fraud`: its
rows; `traffic`: the public functions; `files`: reading and writing transactions).
"""

from riskops.data.generator.config import GeneratorConfig
from riskops.data.generator.files import read_transactions, write_transactions
from riskops.data.generator.tables import FX_PER_USD, RING_FRAUD_RATE, SCENARIOS
from riskops.data.generator.traffic import generate, generate_with_drift, product_catalogue, to_usd

__all__ = [
    "FX_PER_USD",
    "RING_FRAUD_RATE",
    "SCENARIOS",
    "GeneratorConfig",
    "generate",
    "generate_with_drift",
    "product_catalogue",
    "read_transactions",
    "to_usd",
    "write_transactions",
]
