"""edgespike: ternarize, unroll and export spiking language models to the edge."""

__version__ = "0.1.0"
