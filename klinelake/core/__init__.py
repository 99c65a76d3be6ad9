"""The pure core: the kline row, intervals and symbols, the message contract, merge and halts,
the lake writer over the `ObjectStore` interface, the publish policy, Binance's wire formats
and limits. No network or cloud client, no CLI framework, no adapter (tests/core/
test_import_graph.py imports every module here and checks).
"""
