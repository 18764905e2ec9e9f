// netstandard2.0 lacks the types the C# compiler needs for records and init-only properties.
namespace System.Runtime.CompilerServices
{
    internal static class IsExternalInit { }
}
