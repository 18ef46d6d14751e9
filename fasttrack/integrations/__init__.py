"""Integrations of fasttrack's fused ops with third-party model libraries.

    fasttrack.integrations.diffusers_attention   diffusers `Attention` modules: a fused processor
                                                 that can record maps, and its patch rule

Each integration registers its rules with `fasttrack.patch` when imported; `fasttrack.patch`
imports the built-in ones on first use, so nothing here needs importing by hand. None of them
imports its third-party library at import time: a missing optional dependency is reported (with
the extra to install) only when a model that needs it is patched.
"""
