// Stand-in for the header torch's CUDA builds generate (the CPU wheel ships the other c10/cuda
// headers but not this one). Used only by the CUDA compile check (PYDET_CUDA_COMPILE_CHECK).
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
