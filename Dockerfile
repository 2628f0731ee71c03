# Builds the memsync server. Used by docker-compose.yml.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /memsync ./cmd/server

FROM gcr.io/distroless/static-debian12
COPY --from=build /memsync /memsync
EXPOSE 8080
ENTRYPOINT ["/memsync"]
