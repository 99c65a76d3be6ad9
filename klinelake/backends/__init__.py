"""Where bytes go: the object stores (local directory, GCS) behind klinelake.core.storage's
interface, the lake opener by URI, the sinks (lake or Pub/Sub topic), the dead-letter
client and the local halts cache.
"""
