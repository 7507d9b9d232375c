# Cython declarations for metrics.py (an augmenting .pxd: the .py stays plain Python, the pure path).
# Bar is a C extension type: the engine makes one per closed bar at C speed (closed_bar), its fields cannot be
# assigned from Python (readonly), and its sums wait as integers until a Decimal is read.
cimport cython

# No garbage-collector tracking (as msgspec's gc=False): a Bar holds no reference back to anything that holds it.
@cython.no_gc
cdef class Bar:
    cdef readonly object window, start, end, open, high, low, close, trades, trade_count, largest_qty, largest_id
    cdef readonly object closed_by, symbol
    cdef object _buy_volume, _sell_volume, _buy_notional, _sell_notional, _cvd, _footprint
    cdef object _buy_e8, _sell_e8, _buy_e16, _sell_e16, _cvd_e8, _tick, _tick_e8, _value_area
    cdef dict _levels

    cpdef tuple _values(self)

@cython.locals(bar=Bar)
cpdef Bar closed_bar(object window, object start, object end, object open, object high, object low, object close,
                     object buy_e8, object sell_e8, object buy_e16, object sell_e16, object trades,
                     object trade_count, object largest_qty, object largest_id, object cvd_e8, dict levels,
                     object tick, object tick_e8, object value_area, str closed_by, object symbol)
