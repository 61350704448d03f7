/* Packed (8 rows interleaved) block layouts; see packed.c for the byte order and why. */
#ifndef MOESTREAM_PACKED_H
#define MOESTREAM_PACKED_H
#include "kernels.h"

typedef struct { half d[8]; uint8_t qs[128]; } block_q4_0_r8;  /* one block column of 8 Q4_0 rows */
typedef struct { half d[8]; int8_t qs[256]; } block_q8_0_r8;   /* one block column of 8 Q8_0 rows */

#endif
