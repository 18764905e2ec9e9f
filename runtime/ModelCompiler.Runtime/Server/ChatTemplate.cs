using System;
using System.Collections.Generic;
using System.Text;

namespace ModelCompiler.Runtime.Server;

/// <summary>A chat message as the template sees it: a role (system, user, assistant) and its text.</summary>
/// <param name="Role">One of <see cref="ChatTemplate.KnownRoles"/>.</param>
/// <param name="Content">The message's text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// Turns chat messages into the prompt text the model continues. The default, <see cref="Plain"/>, writes
/// each message as <c>&lt;|role|&gt;\n{content}\n</c> and ends with <c>&lt;|assistant|&gt;\n</c>, the cue
/// for the model's reply (the Zephyr/TinyLlama layout without special tokens: a model trained on
/// plain text, like the TinyStories ones, reads it as text). <see cref="Llama2"/> is Meta's
/// <c>[INST]</c> format. A description-provided template can replace either later; the BOS token is
/// added by the tokenizer, not by the template.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>The roles a message may have (OpenAI's <c>developer</c> is read as <c>system</c>).</summary>
    public static readonly IReadOnlyList<string> KnownRoles = ["system", "developer", "user", "assistant"];

    private readonly Func<IReadOnlyList<ChatTurn>, string> _render;

    private ChatTemplate(string name, Func<IReadOnlyList<ChatTurn>, string> render)
    {
        Name = name;
        _render = render;
    }

    /// <summary>Template name (<c>plain</c>, <c>llama2</c>).</summary>
    public string Name { get; }

    /// <summary>
    /// The default: <c>&lt;|system|&gt;\n…\n&lt;|user|&gt;\n…\n&lt;|assistant|&gt;\n…\n</c> per message, then
    /// <c>&lt;|assistant|&gt;\n</c>.
    /// </summary>
    public static ChatTemplate Plain { get; } = new("plain", RenderPlain);

    /// <summary>
    /// Llama 2 chat: <c>[INST] &lt;&lt;SYS&gt;&gt;\n{system}\n&lt;&lt;/SYS&gt;&gt;\n\n{user} [/INST] {assistant} </c>… ending
    /// after the last user turn's <c>[/INST]</c>.
    /// </summary>
    public static ChatTemplate Llama2 { get; } = new("llama2", RenderLlama2);

    /// <summary>The template named <paramref name="name"/>, or null.</summary>
    public static ChatTemplate? FromName(string name) => name switch
    {
        "plain" => Plain,
        "llama2" => Llama2,
        _ => null,
    };

    /// <summary>The prompt text for <paramref name="messages"/>.</summary>
    public string Render(IReadOnlyList<ChatTurn> messages) => _render(messages);

    private static string NormalizeRole(string role) => role == "developer" ? "system" : role;

    private static string RenderPlain(IReadOnlyList<ChatTurn> messages)
    {
        var text = new StringBuilder();
        foreach (var message in messages)
            text.Append("<|").Append(NormalizeRole(message.Role)).Append("|>\n").Append(message.Content).Append('\n');
        return text.Append("<|assistant|>\n").ToString();
    }

    private static string RenderLlama2(IReadOnlyList<ChatTurn> messages)
    {
        var text = new StringBuilder();
        string? system = null;
        bool open = false;   // an [INST] awaits its [/INST]
        foreach (var message in messages)
        {
            switch (NormalizeRole(message.Role))
            {
                case "system":
                    system = system is null ? message.Content : system + "\n" + message.Content;
                    break;
                case "user":
                    if (open) text.Append(" [/INST] ");
                    text.Append("[INST] ");
                    if (system is not null) text.Append("<<SYS>>\n").Append(system).Append("\n<</SYS>>\n\n");
                    system = null;
                    text.Append(message.Content.Trim());
                    open = true;
                    break;
                default:
                    if (open) text.Append(" [/INST]");
                    text.Append(' ').Append(message.Content.Trim()).Append(' ');
                    open = false;
                    break;
            }
        }
        if (open) text.Append(" [/INST]");
        return text.ToString();
    }
}
