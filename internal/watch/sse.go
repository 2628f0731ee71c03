package watch

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// AppendFrame appends m to dst as one text/event-stream message:
//
//	id: 42
//	event: put
//	data: {"id":42,"type":"put","namespace":"…","key":"…",…}
//
// or, for a reset, "event: reset" with data {"reason": …} (and the id it
// stands for, when there is one). Event JSON never contains a newline
// (encoding/json compacts raw values, and published events are encoded by
// it), so one data line carries it. The hub encodes each live event so
// once, for every watcher (PollSSE).
func AppendFrame(dst []byte, m Message) []byte {
	var data []byte
	typ := m.Event.Type
	if m.Reset != "" {
		typ = "reset"
		data, _ = json.Marshal(struct {
			Reason string `json:"reason"`
		}{m.Reset})
	} else if data = m.Data; data == nil || bytes.IndexByte(data, '\n') >= 0 {
		var err error
		if data, err = json.Marshal(m.Event); err != nil {
			return dst // cannot happen: events were decoded from JSON
		}
	}
	if m.Event.ID > 0 {
		dst = append(dst, "id: "...)
		dst = strconv.AppendUint(dst, m.Event.ID, 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
