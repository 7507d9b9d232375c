# Cython declarations for fixed.py (an augmenting .pxd: the .py stays plain Python, the pure path).
# cpdef: the engine calls these at every bar close as C functions, not through a Python call.
cpdef object from_e8(object units)
cpdef object from_e16(object units)
