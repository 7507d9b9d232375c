"""A synchronous host: OrderFlow on a thread of its own with ``run_in_thread()``, read from the main thread.

    orderflow sim --port 9443 &                      # the local simulator, in another terminal
    python examples/sync_bot.py --duration 10        # its default URLs are that simulator's

Hooks run on the stream's thread; ``runner.health()`` and ``runner.latest()`` ask that thread and
wait for the answer, so the host never touches the stream's state directly.
"""

from __future__ import annotations

import argparse
import time

from orderflow_plugin import OrderFlow


def main() -> None:
    parser = argparse.ArgumentParser(description="A synchronous host bot on OrderFlow.run_in_thread().")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default: 10)")
    parser.add_argument("--ws-url", default="ws://127.0.0.1:9443", help="WebSocket base URL (default: %(default)s)")
    parser.add_argument("--rest-url", default="http://127.0.0.1:9443", help="REST base URL (default: %(default)s)")
    args = parser.parse_args()

    runner = OrderFlow(["BTCUSDT"], ws_url=args.ws_url, rest_url=args.rest_url).run_in_thread()
    try:
        for _ in range(round(args.duration)):
            time.sleep(1)  # the host's own work goes here
            health = runner.health()
            trade = runner.latest("BTCUSDT").get("trade")
            print(f"{health['state']}: {health['trades']} trades, last price {trade.price if trade else '-'}",
                  flush=True)
    finally:
        runner.stop()


if __name__ == "__main__":
    main()
