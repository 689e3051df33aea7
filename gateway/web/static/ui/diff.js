// A line diff (longest common subsequence) of two JSON values, for showing
// an edit next to the arguments the agent asked for. Output is data
// ([{op: " " | "-" | "+", line}]); the caller renders it as text.

const MAX_LINES = 2000;

function lines(value) {
  return (JSON.stringify(value, null, 2) ?? "null").split("\n");
}

/** The diff of `before` and `after` as pretty-printed JSON lines. */
export function jsonDiff(before, after) {
  const a = lines(before);
  const b = lines(after);
  if (a.length > MAX_LINES || b.length > MAX_LINES) {
    return [...a.map((line) => ({ op: "-", line })), ...b.map((line) => ({ op: "+", line }))];
  }
  // lcs[i][j]: length of the LCS of a[i:] and b[j:].
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i -= 1) {
    for (let j = b.length - 1; j >= 0; j -= 1) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push({ op: " ", line: a[i] });
      i += 1;
      j += 1;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push({ op: "-", line: a[i] });
      i += 1;
    } else {
      out.push({ op: "+", line: b[j] });
      j += 1;
    }
  }
  while (i < a.length) out.push({ op: "-", line: a[i++] });
  while (j < b.length) out.push({ op: "+", line: b[j++] });
  return out;
}
