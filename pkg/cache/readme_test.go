package cache_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// The README's quick start is the body of Example, which runs (against a real
// Redis) with the other tests; this keeps the two from drifting apart.
func TestReadmeQuickStartIsExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var body string
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "Example" {
			body = string(src[fset.Position(fn.Body.Lbrace).Offset+1 : fset.Position(fn.Body.Rbrace).Offset])
		}
	}
	if body == "" {
		t.Fatal("no func Example in example_test.go")
	}
	var want []string
	for _, line := range strings.Split(strings.Trim(body, "\n"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "// Output") {
			break
		}
		want = append(want, strings.TrimPrefix(line, "\t"))
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const start = "<!-- quick start: the body of Example in pkg/cache/example_test.go -->\n```go\n"
	text := string(readme)
	i := strings.Index(text, start)
	if i < 0 {
		t.Fatalf("README.md lacks the quick start marker %q", start)
	}
	block := text[i+len(start):]
	block = block[:strings.Index(block, "```")]
	got := strings.TrimRight(block, "\n")
	if w := strings.TrimRight(strings.Join(want, "\n"), "\n"); got != w {
		t.Errorf("README quick start differs from Example; make it:\n%s", w)
	}
}
