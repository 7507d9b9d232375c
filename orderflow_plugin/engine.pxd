# Cython declarations for engine.py (an augmenting .pxd: the .py stays plain Python, the pure path).
#
# The per-trade step (add) runs on C integers: a price or quantity in units of 10^-8 is a 64-bit integer
# (fixed.units refuses one at or over fixed.LIMIT = 2^63 with FixedPointError naming the trade); a trade's
# id, times and first/last ids are 64-bit too: a Trade whose id or time does not fit raises OverflowError
# (an ArithmeticError) before the engine changes, where the pure path would take it (Binance's ids and
# millisecond times are far below 2^63). Volumes and trade counts are 128-bit (openbar.pxd); notionals,
# footprint levels and the ranking's values are Python integers, which cannot overflow.
cimport cython

cdef long long _MAX_UNITS  # fixed.LIMIT - 1

from orderflow_plugin.openbar cimport OpenBar, int128
from orderflow_plugin.ranking cimport Ranked
from orderflow_plugin.fixed cimport from_e8, from_e16
from orderflow_plugin.metrics cimport closed_bar

@cython.locals(bucket=cython.longlong, level=list)
cdef list _level(OpenBar bar, long long price, long long tick)

cdef class FlowEngine:
    cdef public object symbol, windows, tick, value_area, whale_notional, whale_percentile, whale_window, last
    cdef public long long trades, _tick_units
    cdef readonly long long last_price_units, last_qty_units
    cdef public object _tick, _whale
    cdef public list _closed_totals, _parent, _direct, _descendants, _open, _last_closed
    cdef public dict _units
    cdef public Ranked _ranked

    @cython.locals(bar=OpenBar, totals=list)
    cpdef object _cvd(self)

    cdef public object _trade_of
    cdef public Py_ssize_t _row

    @cython.locals(price_obj=object, qty_obj=object, units=dict)
    cpdef add(self, trade)

    @cython.locals(price=cython.longlong, qty=cython.longlong)
    cpdef add_units(self, trade, object price_units, object qty_units)

    @cython.locals(count=int128)
    cdef inline object _add_trade(self, object trade, object price_obj, object qty_obj, object price,
                                  object decimal_qty)

    @cython.locals(count_rows=Py_ssize_t)
    cpdef list add_many(self, ids, prices, quantities, first_ids, last_ids, times, sells, price_decimals,
                        qty_decimals, trade_of)

    @cython.locals(count_rows=Py_ssize_t, row=Py_ssize_t, out=list, price_units=cython.longlong,
                   qty=cython.longlong, count=int128, metrics=object, price_obj=object, qty_obj=object)
    cdef list _add_rows(self, tuple ids, tuple prices, tuple quantities, tuple first_ids, tuple last_ids,
                        tuple times, tuple sells, tuple price_decimals, tuple qty_decimals, object trade_of)

    @cython.locals(price_units=cython.longlong, qty=cython.longlong, notional=object, tick=cython.longlong,
                   opened=list, index=Py_ssize_t, ms=cython.longlong, bar=OpenBar, level=list, ranked=Ranked,
                   current=list)
    cdef object _step(self, object trade, object price_obj, object qty_obj, object price, object decimal_qty,
                      long long time_ms, long long agg_id, int128 count, bint buy)

    @cython.locals(bar=OpenBar, parent=OpenBar, totals=list, parent_index=object, ms=cython.longlong)
    cpdef _close(self, Py_ssize_t index, long long now, str closed_by, object cvd, list out)

    @cython.locals(bar=OpenBar)
    cpdef bint _closed_holds(self, Py_ssize_t index, long long time_ms)

    cpdef object _closed(self, OpenBar bar, object window, str closed_by, object cvd)
