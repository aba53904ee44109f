package session

import "testing"

// taskFrame is a typical client task frame, 100 bytes.
var taskFrame = []byte(`{"type":"task","id":"c0ffee-0017","data":{"op":"extrude","part":42,"depth":12.25,"sketch":"s-3170"}}`)

func BenchmarkDecodeTask(b *testing.B) {
	var f Frame
	b.SetBytes(int64(len(taskFrame)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(taskFrame, &f); err != nil {
			b.Fatal(err)
		}
	}
	if f.Type != FrameTask {
		b.Fatalf("decoded %v", f.Type)
	}
}

func BenchmarkAppendResult(b *testing.B) {
	id := []byte(`"c0ffee-17"`)
	data := []byte(`{"ok":true,"volume":1234.5,"faces":[1,2,3,4,5,6],"name":"part-42"}`)
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(len(AppendResult(nil, id, data))))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendResult(buf[:0], id, data)
	}
}
