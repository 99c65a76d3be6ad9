"""The `klinelake` command group (`python -m klinelake`): status, verify, verify-vision,
deadletters.
"""
