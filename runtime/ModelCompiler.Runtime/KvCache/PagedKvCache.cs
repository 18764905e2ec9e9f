using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.KvCache;

/// <summary>
/// The KV pool: keys and values of every layer in fixed-size blocks, addressed through block tables.
/// It stores numbers only; which block belongs to which sequence is the block manager's business.
/// </summary>
/// <remarks>
/// Elements are f32 or f16 (<see cref="DType"/>). A block of one layer holds <c>BlockSize × KvDim</c> keys and as
/// many values, at element offset <c>(layer × NumBlocks + block) × BlockSize × KvDim</c> of the key and the value
/// array, both transposed, <c>[KvDim, BlockSize]</c>: one channel of a head over consecutive positions is
/// contiguous, so the attention kernel puts 16 positions in the lanes of a vector, q·k is one FMA per channel with
/// the query element broadcast, and the value sum one FMA per channel with 16 softmax weights; no horizontal sum per
/// position (which made narrow heads, Stories260K's 8, slow).
/// Read and write through <see cref="WriteToken"/> and <see cref="ReadToken"/>; only the kernels depend on the layout.
/// Blocks are counted, not sized in bytes: an f16 pool of <see cref="NumBlocks"/> blocks takes half the memory of
/// an f32 one (<see cref="SizeInBytes"/>).
/// </remarks>
public sealed class PagedKvCache
{
    /// <summary>Allocates a zeroed pool of <paramref name="numBlocks"/> blocks for every layer.</summary>
    /// <exception cref="ArgumentException">The pool would exceed the largest array .NET allows.</exception>
    public PagedKvCache(int numLayers, int numBlocks, int blockSize, int kvDim, KvCacheDType dtype = KvCacheDType.F32)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvDim);
        if (dtype is not (KvCacheDType.F32 or KvCacheDType.F16)) throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a KV cache type.");
        NumLayers = numLayers;
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        KvDim = kvDim;
        DType = dtype;
        long total = (long)numLayers * numBlocks * blockSize * kvDim;
        if (total > Array.MaxLength) throw new ArgumentException($"A KV pool of {numBlocks} blocks is too large ({total} elements per tensor).");
        // Pinned (the pool is large and lives as long as the model, so it never needs to move) so that its pages
        // can be marked for huge pages: attention streams megabytes of it every step (see Interop.LargePages).
        if (dtype == KvCacheDType.F16)
        {
            HalfKeys = AllocatePool<Half>(total);
            HalfValues = AllocatePool<Half>(total);
        }
        else
        {
            FloatKeys = AllocatePool<float>(total);
            FloatValues = AllocatePool<float>(total);
        }
        TouchPages();
    }

    // A large array's pages are mapped on first write. Left to the forward pass, that happened in the KV stores of
    // every block's first use (on the calling thread, while the workers wait): a page fault per 4 KiB, ~17% of a
    // 128-token Llama110M prefill in a perf profile of bench, whose repetitions each take fresh blocks (the block
    // manager hands out the least recently freed). Touched here once, the pool is resident from the start, as a
    // serving engine's is after its first requests anyway.
    private void TouchPages()
    {
        const int bytesPerPage = 4096;
        if (FloatKeys is not null)
        {
            for (long i = 0; i < FloatKeys.LongLength; i += bytesPerPage / sizeof(float)) FloatKeys[i] = 0f;
            for (long i = 0; i < FloatValues!.LongLength; i += bytesPerPage / sizeof(float)) FloatValues[i] = 0f;
        }
        else
        {
            for (long i = 0; i < HalfKeys!.LongLength; i += bytesPerPage / 2) HalfKeys[i] = default;
            for (long i = 0; i < HalfValues!.LongLength; i += bytesPerPage / 2) HalfValues[i] = default;
        }
    }

    private static unsafe T[] AllocatePool<T>(long length) where T : unmanaged
    {
        var array = GC.AllocateArray<T>((int)length, pinned: true);
        fixed (T* p = array) Interop.LargePages.Advise(p, (nuint)(length * sizeof(T)));
        return array;
    }

    /// <summary>Address of the keys' first element, in <see cref="DType"/>; the pool is pinned, so it never moves.</summary>
    internal unsafe byte* KeyData => FloatKeys is not null ? (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(FloatKeys)) : (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(HalfKeys!));
    /// <summary>Address of the values' first element, as <see cref="KeyData"/>.</summary>
    internal unsafe byte* ValueData => FloatValues is not null ? (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(FloatValues)) : (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(HalfValues!));

    /// <summary>Number of layers.</summary>
    public int NumLayers { get; }
    /// <summary>Number of blocks per layer.</summary>
    public int NumBlocks { get; }
    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }
    /// <summary>Elements per token per layer in each of keys and values.</summary>
    public int KvDim { get; }
    /// <summary>Element type of the stored keys and values.</summary>
    public KvCacheDType DType { get; }
    /// <summary>Bytes of keys plus values of the whole pool.</summary>
    public long SizeInBytes => 2L * NumLayers * NumBlocks * BlockSize * KvDim * KvCacheDTypes.ElementSizeInBytes(DType);

    // Storage: the f32 pair or the f16 pair is allocated, never both. Kernels index them with the layout above.
    internal float[]? FloatKeys { get; }
    internal float[]? FloatValues { get; }
    internal Half[]? HalfKeys { get; }
    internal Half[]? HalfValues { get; }

    /// <summary>Element offset of block <paramref name="block"/> of <paramref name="layer"/> in the key and value arrays.</summary>
    internal long BlockOffset(int layer, int block) => ((long)layer * NumBlocks + block) * BlockSize * KvDim;

    /// <summary>
    /// Stores one token's <c>[KvDim]</c> key and value in slot <paramref name="offset"/> of <paramref name="block"/>
    /// (converted to <see cref="DType"/>).
    /// </summary>
    public void WriteToken(int layer, int block, int offset, ReadOnlySpan<float> key, ReadOnlySpan<float> value) =>
        WriteTokens(layer, block, offset, 1, key, KvDim, value, KvDim);

    /// <summary>
    /// Stores the keys and values of <paramref name="count"/> consecutive positions in slots
    /// <c>[offset, offset + count)</c> of <paramref name="block"/>: token j's <c>[KvDim]</c> key starts at
    /// <c>keys[j * keyStride]</c>, its value at <c>values[j * valueStride]</c>. Channel by channel, so that each
    /// channel's slots (contiguous in the transposed block) are written together: a token at a time touches KvDim
    /// lines per tensor, which a prefill paid as L2 misses (~10% of a 128-token prefill of Llama110M).
    /// </summary>
    public unsafe void WriteTokens(int layer, int block, int offset, int count, ReadOnlySpan<float> keys, int keyStride, ReadOnlySpan<float> values, int valueStride)
    {
        long start = CheckedBlockOffset(layer, block, offset);
        int blockSize = BlockSize, kvDim = KvDim;
        if (count < 1 || offset + count > blockSize) throw new ArgumentOutOfRangeException(nameof(count), count, $"Slots {offset}..{offset + count - 1} are not within a block of {blockSize}.");
        if (keyStride < kvDim || valueStride < kvDim) throw new ArgumentOutOfRangeException(nameof(keyStride), "A row stride is shorter than a token's key or value.");
        // Bounds for every index below.
        keys = keys.Slice(0, (count - 1) * keyStride + kvDim);
        values = values.Slice(0, (count - 1) * valueStride + kvDim);
        if (FloatKeys is not null)
        {
            fixed (float* pKey = keys, pValue = values, pKeys = &FloatKeys[start + offset], pValues = &FloatValues![start + offset])
            {
                for (int c = 0; c < kvDim; c++)
                {
                    float* k = pKeys + c * blockSize, v = pValues + c * blockSize;
                    for (int j = 0; j < count; j++)
                    {
                        k[j] = pKey[j * keyStride + c];
                        v[j] = pValue[j * valueStride + c];
                    }
                }
            }
        }
        else
        {
            var halfKeys = HalfKeys.AsSpan((int)start, blockSize * kvDim);
            var halfValues = HalfValues.AsSpan((int)start, blockSize * kvDim);
            // Converted a few tokens' rows at a time into stack buffers (contiguous, so in vectors: the scalar Half
            // conversion was ~12% of a Llama110M q4_0 prefill with an f16 cache), then stored channel by channel.
            int rowsPerPass = Math.Clamp(MaxConvertedHalves / kvDim, 1, count);
            Span<ushort> keyBits = stackalloc ushort[rowsPerPass * kvDim];
            Span<ushort> valueBits = stackalloc ushort[rowsPerPass * kvDim];
            var halfKeyBits = MemoryMarshal.Cast<Half, ushort>(halfKeys);
            var halfValueBits = MemoryMarshal.Cast<Half, ushort>(halfValues);
            for (int j0 = 0; j0 < count; j0 += rowsPerPass)
            {
                int rows = Math.Min(rowsPerPass, count - j0);
                bool nan = false;
                for (int j = 0; j < rows; j++)
                {
                    nan |= ToHalfBits(keys.Slice((j0 + j) * keyStride, kvDim), keyBits.Slice(j * kvDim, kvDim));
                    nan |= ToHalfBits(values.Slice((j0 + j) * valueStride, kvDim), valueBits.Slice(j * kvDim, kvDim));
                }
                if (nan) MayHoldNaN = true;
                for (int c = 0; c < kvDim; c++)
                {
                    int slot = c * blockSize + offset + j0;
                    for (int j = 0; j < rows; j++)
                    {
                        halfKeyBits[slot + j] = keyBits[j * kvDim + c];
                        halfValueBits[slot + j] = valueBits[j * kvDim + c];
                    }
                }
            }
        }
    }

    /// <summary>Halves of converted rows <see cref="WriteTokens"/> keeps on the stack per tensor (16 KiB).</summary>
    private const int MaxConvertedHalves = 8192;

    /// <summary>
    /// <see cref="ToHalf"/> of every element of <paramref name="source"/>, as bits, into <paramref name="destination"/>:
    /// eight at a time where Vector256 is accelerated, with the same results (round to nearest even, saturated at
    /// ±65504); a vector holding a NaN, and the tail, go through <see cref="ToHalf"/> itself. Returns whether any element
    /// was NaN.
    /// </summary>
    internal static bool ToHalfBits(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        int i = 0;
        bool nan = false;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= source.Length - 8; i += 8)
            {
                var x = Vector256.Create(source.Slice(i, 8));
                if (!Vector256.EqualsAll(x, x))
                {
                    nan = true;
                    for (int k = i; k < i + 8; k++) destination[k] = BitConverter.HalfToUInt16Bits(ToHalf(source[k]));
                    continue;
                }
                var halves = ToHalfBits(x);
                // The eight 16-bit results sit in the low halves of the 32-bit lanes.
                Vector128.Narrow(halves.GetLower(), halves.GetUpper()).CopyTo(destination.Slice(i, 8));
            }
        }
        for (; i < source.Length; i++)
        {
            nan |= float.IsNaN(source[i]);
            destination[i] = BitConverter.HalfToUInt16Bits(ToHalf(source[i]));
        }
        return nan;
    }

    // f32 → f16 bits for eight non-NaN values, round to nearest even, saturated at ±65504 (F. Giesen's
    // float_to_half_fast3_rtne): normal results add the exponent rebias and the rounding increment to the f32 bits and
    // shift; subnormal ones (|x| < 2^-14) let an f32 addition of 0.5 do the rounding.
    private static Vector256<uint> ToHalfBits(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(-65504f)), Vector256.Create(65504f));
        var bits = x.AsUInt32();
        var sign = (bits >> 16) & Vector256.Create(0x8000u);
        var magnitude = bits & Vector256.Create(0x7FFFFFFFu);
        var odd = (magnitude >> 13) & Vector256.Create(1u);
        var normal = (magnitude + Vector256.Create(0xC8000FFFu) + odd) >> 13;
        var subnormal = (magnitude.AsSingle() + Vector256.Create(0.5f)).AsUInt32() - Vector256.Create(0x3F000000u);
        var isSubnormal = Vector256.LessThan(magnitude, Vector256.Create(0x38800000u));
        return Vector256.ConditionalSelect(isSubnormal, subnormal, normal) | sign;
    }

    /// <summary>
    /// True once a NaN key or value was written to an f16 pool (it stays true: nothing tracks which slots hold them).
    /// Until then every stored f16 value is finite, since the writes saturate infinities (<see cref="ToHalf"/>), and
    /// attention reads the pool with the three-instruction widening of finite values (see <c>FiniteF16Kv</c>); after, with
    /// the general one, so that a NaN still reads as NaN.
    /// </summary>
    public bool MayHoldNaN { get; private set; }

    /// <summary>Reads back one token's key and value (widened to f32) from slot <paramref name="offset"/> of <paramref name="block"/>.</summary>
    public void ReadToken(int layer, int block, int offset, Span<float> key, Span<float> value)
    {
        long start = CheckedBlockOffset(layer, block, offset);
        int blockSize = BlockSize, kvDim = KvDim;
        key = key.Slice(0, kvDim);
        value = value.Slice(0, kvDim);
        for (int c = 0; c < kvDim; c++)
        {
            long i = start + c * blockSize + offset;
            key[c] = FloatKeys is not null ? FloatKeys[i] : (float)HalfKeys![i];
            value[c] = FloatValues is not null ? FloatValues[i] : (float)HalfValues![i];
        }
    }

    /// <summary>
    /// Copies every layer's keys and values of block <paramref name="sourceBlock"/> into
    /// <paramref name="destinationBlock"/> (copy-on-write of a shared block, see <see cref="BlockCopy"/>), in the stored type.
    /// </summary>
    public void CopyBlock(int sourceBlock, int destinationBlock)
    {
        if ((uint)sourceBlock >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(sourceBlock), sourceBlock, $"The pool has {NumBlocks} blocks.");
        if ((uint)destinationBlock >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(destinationBlock), destinationBlock, $"The pool has {NumBlocks} blocks.");
        int blockElements = BlockSize * KvDim;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            int source = (int)BlockOffset(layer, sourceBlock), destination = (int)BlockOffset(layer, destinationBlock);
            if (FloatKeys is not null)
            {
                Array.Copy(FloatKeys, source, FloatKeys, destination, blockElements);
                Array.Copy(FloatValues!, source, FloatValues!, destination, blockElements);
            }
            else
            {
                Array.Copy(HalfKeys!, source, HalfKeys!, destination, blockElements);
                Array.Copy(HalfValues!, source, HalfValues!, destination, blockElements);
            }
        }
    }

    /// <summary>
    /// f32 → f16 as the cache stores it: round to nearest even, finite values beyond the f16 range saturated to
    /// ±65504 so that an outlier costs precision, not an infinity that would turn attention into NaN.
    /// </summary>
    public static Half ToHalf(float x) => (Half)Math.Clamp(x, -65504f, 65504f);

    private long CheckedBlockOffset(int layer, int block, int offset)
    {
        if ((uint)layer >= (uint)NumLayers) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"The pool has {NumLayers} layers.");
        if ((uint)block >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(block), block, $"The pool has {NumBlocks} blocks.");
        if ((uint)offset >= (uint)BlockSize) throw new ArgumentOutOfRangeException(nameof(offset), offset, $"A block has {BlockSize} slots.");
        return BlockOffset(layer, block);
    }
}
