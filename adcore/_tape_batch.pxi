# Batched replay of a recorded tape (Tape.map / gradient_map / jacobian_map):
# included at the end of _tape.pyx; the Python face is adcore/batched.py.
