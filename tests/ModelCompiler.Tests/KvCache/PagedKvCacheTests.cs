using ModelCompiler.Runtime;
using ModelCompiler.Runtime.KvCache;
using Xunit;

namespace ModelCompiler.Tests.KvCache;

/// <summary>The pool's own contract, for both element types: what is written is read back (rounded for f16), copy-on-write copies whole blocks of every layer, sizes.</summary>
[Trait("Category", TestCategories.CpuPaths)]
public class PagedKvCacheTests
{
    [Theory]
    [InlineData(KvCacheDType.F32)]
    [InlineData(KvCacheDType.F16)]
    public void Tokens_read_back_as_written_and_CopyBlock_copies_every_layer_of_one_block(KvCacheDType dtype)
    {
        const int numLayers = 3, numBlocks = 5, blockSize = 4, kvDim = 6;
        var cache = new PagedKvCache(numLayers, numBlocks, blockSize, kvDim, dtype);
        var random = new Random(3);
        float[] Row() => Enumerable.Range(0, kvDim).Select(_ => (float)(random.NextDouble() * 200 - 100)).ToArray();
        var written = new Dictionary<(int, int, int), (float[] K, float[] V)>();
        for (int layer = 0; layer < numLayers; layer++)
            for (int offset = 0; offset < blockSize; offset++)
            {
                var (k, v) = (Row(), Row());
                cache.WriteToken(layer, 1, offset, k, v);
                written[(layer, 1, offset)] = (k, v);
            }
        cache.WriteToken(0, 3, 2, Row(), Row()); // block 3 is overwritten below; block 4 stays empty

        cache.CopyBlock(1, 3);

        var key = new float[kvDim];
        var value = new float[kvDim];
        foreach (var ((layer, _, offset), (k, v)) in written)
            foreach (int block in new[] { 1, 3 })
            {
                cache.ReadToken(layer, block, offset, key, value);
                Assert.Equal(Stored(k, dtype), key);
                Assert.Equal(Stored(v, dtype), value);
            }
        cache.ReadToken(2, 4, 3, key, value);
        Assert.All(key.Concat(value), x => Assert.Equal(0f, x));
        Assert.Equal(2L * numLayers * numBlocks * blockSize * kvDim * (dtype == KvCacheDType.F16 ? 2 : 4), cache.SizeInBytes);
    }

    [Fact]
    public void F16_conversion_in_vectors_gives_the_scalar_conversions_bits_for_every_kind_of_float()
    {
        // Every f16 value, the midpoints between neighbours (ties: round to even) and the floats next to them, both
        // signs, the subnormal and overflow ranges, infinities, NaNs, and random bit patterns.
        var inputs = new List<float>();
        for (int h = 0; h < 0x7C00; h++)
        {
            float a = (float)BitConverter.UInt16BitsToHalf((ushort)h), b = (float)BitConverter.UInt16BitsToHalf((ushort)(h + 1));
            float mid = (float)(((double)a + b) / 2);
            foreach (float v in new[] { a, mid, MathF.BitDecrement(mid), MathF.BitIncrement(mid) }) { inputs.Add(v); inputs.Add(-v); }
        }
        inputs.AddRange([65504f, 65519f, 65520f, 70000f, 1e30f, float.MaxValue, float.PositiveInfinity, float.NegativeInfinity, float.NaN,
            BitConverter.Int32BitsToSingle(0x7FC00001), BitConverter.Int32BitsToSingle(unchecked((int)0xFF800001)), 1e-45f, 1e-10f, 5.9604645e-8f, 2.9802322e-8f]);
        var random = new Random(5);
        for (int i = 0; i < 200_000; i++) inputs.Add(BitConverter.Int32BitsToSingle(random.Next() ^ (random.Next(2) << 31)));
        var source = inputs.ToArray();
        var bits = new ushort[source.Length];
        PagedKvCache.ToHalfBits(source, bits);
        for (int i = 0; i < source.Length; i++)
        {
            ushort expected = BitConverter.HalfToUInt16Bits(PagedKvCache.ToHalf(source[i]));
            if (bits[i] != expected)
                Assert.Fail($"{source[i]:R} (0x{BitConverter.SingleToUInt32Bits(source[i]):X8}) became 0x{bits[i]:X4}, not 0x{expected:X4}");
        }
    }

    [Fact]
    public void F16_saturates_values_beyond_its_range_instead_of_storing_infinities()
    {
        var cache = new PagedKvCache(1, 1, 1, 4, KvCacheDType.F16);
        cache.WriteToken(0, 0, 0, [1e6f, -1e6f, 65504f, 1f / 3], [float.NaN, 70000f, -0f, 2.5f]);
        var key = new float[4];
        var value = new float[4];
        cache.ReadToken(0, 0, 0, key, value);
        Assert.Equal([65504f, -65504f, 65504f, (float)(Half)(1f / 3)], key);
        Assert.True(float.IsNaN(value[0]));
        Assert.Equal([65504f, -0f, 2.5f], value[1..]);
        Assert.True(cache.MayHoldNaN);
    }

    [Fact]
    public void An_f16_pool_notes_when_a_NaN_is_written_and_only_then()
    {
        // Attention reads a pool without NaN with the short widening of finite halves (FiniteF16Kv), so the flag must
        // catch every NaN write, by the vector conversion and by the tail alike, and infinities (saturated) must not set it.
        var cache = new PagedKvCache(1, 2, 4, 9, KvCacheDType.F16);
        Assert.False(cache.MayHoldNaN);
        var keys = Enumerable.Range(0, 4 * 9).Select(i => i % 5 == 0 ? float.PositiveInfinity : -i * 1e4f).ToArray();
        cache.WriteTokens(0, 0, 0, 4, keys, 9, keys, 9);
        cache.CopyBlock(0, 1);
        Assert.False(cache.MayHoldNaN);
        foreach (int at in new[] { 3, 8 }) // inside the first 8 (a vector), the ninth (the tail)
        {
            var withNaN = new PagedKvCache(1, 2, 4, 9, KvCacheDType.F16);
            var row = new float[9];
            row[at] = float.NaN;
            withNaN.WriteTokens(0, 1, 2, 1, new float[9], 9, row, 9);
            Assert.True(withNaN.MayHoldNaN, $"a NaN at {at}");
        }
        var f32 = new PagedKvCache(1, 1, 1, 2, KvCacheDType.F32);
        f32.WriteToken(0, 0, 0, [float.NaN, 1], [1, 2]);
        Assert.False(f32.MayHoldNaN); // read as stored: nothing to note
    }

    [Theory]
    [InlineData(KvCacheDType.F32)]
    [InlineData(KvCacheDType.F16)]
    public void A_run_of_tokens_written_at_once_reads_back_token_by_token(KvCacheDType dtype)
    {
        const int blockSize = 8, kvDim = 5, keyStride = 13, valueStride = 7;
        var cache = new PagedKvCache(2, 3, blockSize, kvDim, dtype);
        var random = new Random(9);
        const int count = 5, offset = 2;
        var keys = Enumerable.Range(0, count * keyStride).Select(_ => (float)(random.NextDouble() * 20 - 10)).ToArray();
        var values = Enumerable.Range(0, count * valueStride).Select(_ => (float)(random.NextDouble() * 20 - 10)).ToArray();
        cache.WriteTokens(1, 2, offset, count, keys, keyStride, values, valueStride);

        var key = new float[kvDim];
        var value = new float[kvDim];
        for (int slot = 0; slot < blockSize; slot++)
        {
            cache.ReadToken(1, 2, slot, key, value);
            int j = slot - offset;
            if (j < 0 || j >= count)
            {
                Assert.All(key.Concat(value), x => Assert.Equal(0f, x));
                continue;
            }
            Assert.Equal(Stored(keys.AsSpan(j * keyStride, kvDim).ToArray(), dtype), key);
            Assert.Equal(Stored(values.AsSpan(j * valueStride, kvDim).ToArray(), dtype), value);
        }
        // Other layers and blocks are untouched.
        cache.ReadToken(0, 2, offset, key, value);
        Assert.All(key.Concat(value), x => Assert.Equal(0f, x));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.WriteTokens(0, 0, 6, 3, keys, keyStride, values, valueStride));
    }

    [Fact]
    public void Bad_slots_are_errors_naming_the_argument()
    {
        var cache = new PagedKvCache(2, 3, 4, 2);
        var row = new float[2];
        Assert.Equal("layer", Assert.Throws<ArgumentOutOfRangeException>(() => cache.WriteToken(2, 0, 0, row, row)).ParamName);
        Assert.Equal("block", Assert.Throws<ArgumentOutOfRangeException>(() => cache.ReadToken(0, 3, 0, row, row)).ParamName);
        Assert.Equal("offset", Assert.Throws<ArgumentOutOfRangeException>(() => cache.WriteToken(0, 0, 4, row, row)).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.CopyBlock(0, 3));
    }

    private static float[] Stored(float[] values, KvCacheDType dtype) =>
        dtype == KvCacheDType.F16 ? values.Select(v => (float)(Half)v).ToArray() : values;
}
