namespace ModelCompiler.Runtime;

/// <summary>
/// One entry of a generated engine's weight binding table: a graph weight, its shape, and the
/// checkpoint tensors it is made of. Several sources are concatenated along the first (row) dimension
/// at load time; that is how q/k/v and gate/up become single fused projections.
/// </summary>
/// <param name="Index">Index of the weight in the engine's table (the generated code reads it by index).</param>
/// <param name="Name">Graph weight name, for messages.</param>
/// <param name="Shape">Shape, outermost first: <c>[rows, cols]</c> for a matrix, <c>[n]</c> for a vector.</param>
/// <param name="Sources">Checkpoint tensor names, concatenated along rows in this order.</param>
public sealed record WeightSpec(int Index, string Name, int[] Shape, string[] Sources)
{
    /// <summary>Number of elements.</summary>
    public long NumElements
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }
}
