# Cython declarations for openbar.py (an augmenting .pxd: the .py stays plain Python, the pure path).
# Prices, quantities and ids are C 64-bit integers: fixed.LIMIT keeps a price or quantity below 2^63 (checked at
# decode, and by the engine for any other Trade). Volumes and trade counts are 128-bit sums of such values: one
# overflows only after 2^64 trades in a bar, which cannot happen. Notionals (each below 2^126) stay Python
# integers: two extreme trades would pass 2^127, and a Python integer never overflows.
cimport cython

cdef extern from *:
    ctypedef long long int128 "__int128"

cdef class OpenBar:
    cdef public long long start, high_units, low_units, trades, largest_units, largest_id, floor
    cdef public int128 buy_volume, sell_volume, trade_count
    cdef public object open, high, low, close, largest_qty, buy_notional, sell_notional
    cdef public dict levels
    cdef public list level

    @cython.locals(bucket=object, buy=object, sell=object, level=list, levels=dict)
    cpdef fold(self, OpenBar child)
    cpdef OpenBar copy(self)
