"""Lipschitz bounds and certificates: pair geometry and lower bounds, structure and upper bounds, LipSDP, CROWN. May
import core."""
