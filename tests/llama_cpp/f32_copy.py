#!/usr/bin/env python3
"""Writes an F32 copy of a GGUF model: every tensor expanded by the `gguf`
package's own `gguf.quants.dequantize` (not tabtune's), metadata kept.

llama.cpp multiplies a quantized matrix by activations it rounds to 8 bits,
so on a quantized base its losses differ from tabtune's (which expands the
weights to f32) by that rounding; on this copy both compute in f32, which is
what lets check.mjs hold llama.cpp's losses with a GGUF LoRA to tabtune's
tightly.

Usage: f32_copy.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def main():
    src, dst = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    for name, field in r.fields.items():
        # The header's own fields, and the keys the writer sets or that name the old types.
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type", "general.alignment"):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            w.add_key_value(name, field.contents(), kind, sub_type=field.types[-1])
        else:
            w.add_key_value(name, field.contents(), kind)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
