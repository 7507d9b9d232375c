# Cython declarations for flowsignals.py (an augmenting .pxd: the .py stays plain Python, the pure path).
#
# The per-trade step (FlowSignals.trade) runs on C integers: a price in units of 10^-8 is a 64-bit integer
# (fixed.units refuses one at or over fixed.LIMIT = 2^63 with FixedPointError naming the trade), as are the tick
# (fixed.to_e8, the same bound), bucket floors (bucket * tick <= price), trade ids, times and the session's bounds
# (Binance's ids and millisecond times are far below 2^63; one that does not fit raises OverflowError before
# anything changes, as the compiled engine's does). Comparisons are written as differences (price - floor,
# price - poc, agg_id - 1 once agg_id > last_id), never floor + tick, so no intermediate passes 2^63.
# The session profile's volumes, a sweep's quantity and notional (each notional below 2^126) and the
# tape-speed baseline's sums are Python integers, which cannot overflow.
cimport cython


cdef class _NakedPocs:
    cdef public Py_ssize_t limit
    cdef public list prices, entries
    cdef public bint fresh

    @cython.locals(prices=list, first=Py_ssize_t, last=Py_ssize_t, i=Py_ssize_t, poc=cython.longlong,
                   low=cython.longlong, high=cython.longlong, hit=list)
    cpdef list touched(self, long long previous, long long price, long long tick)


cdef class FlowSignals:
    cdef public object symbol, options, _tick, _run_last, _baseline, _baseline_sum, _baseline_squares
    cdef public frozenset _windows
    cdef public long long _tick_units, _last_price, _second, _second_trades, _last_id, _last_time
    cdef public bint _last_buy
    cdef public long long _session_start, _session_end, _session_trades, _floor
    cdef public dict _units, _recent, _session, _means
    cdef public list _run, _level, _run_prices, _run_qtys
    cdef public long long _run_price
    cdef public object _run_qty
    cdef public _NakedPocs _naked

    @cython.locals(price_obj=object, qty_obj=object)
    cpdef trade(self, trade)

    @cython.locals(out=list, qty_obj=object, price=cython.longlong,
                   time_ms=cython.longlong, agg_id=cython.longlong, last_id=cython.longlong, buy=cython.bint,
                   tick=cython.longlong, last=object, run=list, second=cython.longlong,
                   level=list, bucket=cython.longlong, previous=cython.longlong, naked=_NakedPocs)
    cpdef trade_units(self, trade, object price_units, object qty_units)

    @cython.locals(run=list, prices=list, quantities=list, levels=Py_ssize_t, count=Py_ssize_t, i=Py_ssize_t,
                   qty=object, notional=object, size=object, first=object)
    cpdef _end_run(self, list out)
