"""Lipschitz bounds and certificates: pair geometry and lower bounds, structure and upper bounds, LipSDP, CROWN. May
import core and models (the layer types the bounds read: MinMax, GroupSort, Normalize and ChannelNormalize;
models imports only core and data, so the bounds sit above it)."""
