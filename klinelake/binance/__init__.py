"""Binance clients (network I/O): the REST client, the data.binance.vision archive
downloader and the request-weight pacer. Their wire formats are parsed in klinelake.core.
"""
