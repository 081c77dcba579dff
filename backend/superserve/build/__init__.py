"""Making a served model: the digit data, training, SubnetNorm calibration, profiling, SubNet selection, and the
import of a user's own OFA checkpoint and image folder. Nothing here runs at serving time."""
