"""The policy pack: `pulumi preview --policy-pack policy` (or `up`) runs it; the policies are in policies.py.

Building the PolicyPack starts the analyzer's gRPC server and blocks, so nothing else belongs here.
"""

from policies import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
