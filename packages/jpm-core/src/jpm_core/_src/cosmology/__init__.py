"""Flat w0-wa cold-dark-matter cosmology: parameters, background, growth, linear power (private).

The public names are re-exported from `jpm_core`; the modules here are:

- `parameters`: the `Cosmology` PyTree and its eager validation;
- `_grid`: the fixed ln(a) grid and the cubic Hermite interpolation the tables use;
- `background`: E(a), comoving distance and its inverse;
- `growth`: first- and second-order growth factors and rates;
- `power`: Eisenstein & Hu (1998) transfer functions, sigma(R) and the linear power spectrum.
"""
