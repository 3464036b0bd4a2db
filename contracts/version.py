"""The version of the public contracts, stamped on every exported schema and the AsyncAPI document.

Contracts evolve additively (a minor bump adds optional fields or messages; a
major bump would remove or change one, which the rules forbid without a new
message name). 1.1.0: the exported schemas carry every rule a schema can say.
"""

CONTRACTS_VERSION = "1.1.0"
