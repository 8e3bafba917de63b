"""Decode Native files with chdb (ClickHouse 26.x in-process) and print one JSON line
per file: {"file": name, "rows": [...]} with the columns the Rust test compares.

Usage: decode_native.py DIR KIND   (KIND: ticks | generic)
The Rust side wrote DIR/*.native; this script only reads them back through chdb, so
a value that differs was encoded wrongly (or decoded wrongly by ClickHouse itself)."""
import json
import os
import sys

import chdb

TICKS = (
    "SELECT toUnixTimestamp64Milli(timestamp) AS ts, instrument_token, exchange, tradingsymbol, "
    "last_price, last_quantity, average_price, volume_traded, open, high, low, close, oi, "
    "depth_buy, depth_sell, data_quality_score, validation_flags, "
    "toUnixTimestamp64Milli(received_at) AS recv, stream_seq, toTypeName(timestamp) AS ts_type, "
    "toTypeName(exchange) AS exchange_type FROM file('{path}', Native)"
)
GENERIC = "SELECT *, toTypeName(lc) AS lc_type FROM file('{path}', Native)"
SETTINGS = " SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_decimals = 0"


def main():
    directory, kind = sys.argv[1], sys.argv[2]
    template = TICKS if kind == "ticks" else GENERIC
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".native"):
            continue
        path = os.path.join(directory, name)
        text = chdb.query(template.format(path=path) + SETTINGS, "JSONEachRow").bytes().decode()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        print(json.dumps({"file": name, "rows": rows}))


if __name__ == "__main__":
    main()
