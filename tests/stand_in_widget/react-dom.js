// The stand-in for react-dom's UMD build: render() hands the element to the stand-in widget.
window.ReactDOM = {
  createRoot: function (container) {
    return {
      render: function (element) {
        element.type.mount(container, element.props);
      },
    };
  },
};
