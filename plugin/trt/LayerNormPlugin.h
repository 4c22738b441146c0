// LayerNormPlugin.h - TensorRT plugin "MVT_LayerNorm" (version "1", namespace "mobilevit_trt"), contract in
// mobilevit_trt/plugin_spec.py: inputs x [..., C] (FP32/FP16), gamma [C] FP32, beta [C] FP32; output like x;
// field epsilon (FLOAT32). The plumbing common to all plugins is in PluginBase / PluginCreatorBase.
#ifndef MVT_LAYERNORM_PLUGIN_H
#define MVT_LAYERNORM_PLUGIN_H

#include "mvtPluginCommon.h"

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

class LayerNormPlugin final : public PluginBase<LayerNormPlugin>
{
public:
    static PluginInfo const& info() noexcept;
    static LayerNormPlugin* fromFields(char const* where, nvinfer1::PluginFieldCollection const* fc);

    explicit LayerNormPlugin(float epsilon);
    // From serialize(); throws std::invalid_argument on a malformed buffer.
    LayerNormPlugin(void const* data, size_t length);

    size_t getSerializationSize() const noexcept override;
    void serialize(void* buffer) const noexcept override;
    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;

    // For PluginBase (supportsFormatCombination, configurePlugin, enqueue).
    static bool supportsType(int32_t pos, nvinfer1::PluginTensorDesc const* inOut) noexcept;
    static std::string checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs);
    int32_t launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, cudaStream_t stream) const;

private:
    float mEpsilon;
};

class LayerNormPluginCreator final : public PluginCreatorBase<LayerNormPlugin>
{
public:
    LayerNormPluginCreator();
};

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP

#endif // MVT_LAYERNORM_PLUGIN_H
