"""Lipschitz bounds and certificates: pair geometry and lower bounds, structure and upper bounds, LipSDP, CROWN. May
import core and models (the layer types the bounds read: MinMax, GroupSort, Normalize and ChannelNormalize;
models itself imports only core, so the bounds sit above it)."""
