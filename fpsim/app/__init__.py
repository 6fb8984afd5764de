"""The application: what the ``fpsim`` command runs, over the library's layers.

==============  ===========================================================
``cli``         the command line (a thin argparse layer)
``evaluate``    quantized models against FP32 on the shipped text
``report``      the HTML/Markdown report with tables and plots
``verify``      fpsim's codes against ml_dtypes / numpy over every float32
``bench``       speed against ml_dtypes and memcpy
``tables``      plain-text tables
==============  ===========================================================
"""
