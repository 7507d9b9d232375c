# Cython declarations for ranking.py (an augmenting .pxd: the .py stays plain Python, the pure path).
# A C extension type, so the engine reads and appends to the block being filled without an attribute lookup.
cdef class Ranked:
    cdef public Py_ssize_t above, every, inside, needed
    cdef public object blocks, threshold
    cdef public list current

    cpdef rank(self)
